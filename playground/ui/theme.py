"""A clean theme and a little CSS: readable on a projector (16 px base text), nothing cut off at 1280x720.

Fonts are the ones Gradio ships (LocalFont) or the system's: nothing is fetched from the internet.
"""

from __future__ import annotations

import gradio as gr
from gradio.themes.utils import fonts, sizes

from playground.plots import OKABE_ITO

# Diverging, colour-blind-safe pair for per-token log-ratios (Okabe & Ito): blue = more likely than under the base,
# vermillion = less likely.
POSITIVE_RGB = (0, 114, 178)
NEGATIVE_RGB = (213, 94, 0)


def theme() -> gr.themes.Base:
    return gr.themes.Default(
        primary_hue="blue",
        secondary_hue="orange",
        neutral_hue="slate",
        text_size=sizes.text_lg,  # 16 px body text
        spacing_size=sizes.spacing_md,
        radius_size=sizes.radius_sm,
        font=(fonts.LocalFont("Source Sans Pro", weights=(400, 600)), "ui-sans-serif", "system-ui", "sans-serif"),
        font_mono=(fonts.LocalFont("IBM Plex Mono", weights=(400, 600)), "ui-monospace", "monospace"),
    ).set(
        block_title_text_weight="600",
        button_large_text_size="*text_lg",
        button_primary_background_fill=OKABE_ITO["blue"],
        button_primary_background_fill_hover="#005a8c",
        button_primary_text_color="white",
    )


CSS = """
.gradio-container { max-width: 1400px !important; margin: 0 auto; font-size: 16px; }
#pg-header { padding: 0; }
#pg-header h1 { font-size: 1.5rem; margin: 0 0 2px 0; }
#pg-header p { margin: 0; font-size: 15px; }
#pg-status p { margin: 6px 0; }
.pg-variant-head { font-weight: 600; font-size: 17px; padding: 4px 8px; border-left: 6px solid #999;
                   background: #f6f7f9; border-radius: 4px; }
.pg-answer { white-space: pre-wrap; word-wrap: break-word; overflow-wrap: anywhere; line-height: 1.55;
             font-size: 16px; height: 13em; overflow-y: auto; padding: 8px; resize: vertical;
             border: 1px solid #d7dbe0; border-radius: 6px; background: #fff; }
.pg-answer .tok { border-radius: 3px; padding: 1px 0; }
.pg-answer .tok-special { color: #777; font-size: 13px; }
.pg-answer .pg-cursor { color: #0072B2; }
.pg-metrics table { font-size: 15px; width: 100%; }
.pg-metrics td, .pg-metrics th { padding: 2px 6px !important; }
.pg-legend { font-size: 14px; color: #333; }
.pg-legend .swatch { display: inline-block; width: 90px; height: 12px; vertical-align: middle; border-radius: 2px;
                     background: linear-gradient(to right, rgb(213,94,0), #ffffff, rgb(0,114,178)); margin: 0 6px; }
.pg-progress { width: 100%; height: 22px; background: #e8ecf0; border-radius: 6px; overflow: hidden; }
.pg-progress > div { height: 100%; background: #0072B2; transition: width 0.4s; }
.pg-progress-label { font-size: 15px; margin-top: 4px; }
.pg-report-error { color: #a33a00; }
.pg-note { font-size: 15px; color: #444; }
.pg-slot { min-width: 260px; gap: 6px !important; }
.pg-probes { border-collapse: collapse; width: 100%; font-size: 14px; table-layout: fixed; }
.pg-probes th { text-align: left; vertical-align: top; padding: 4px 6px; font-weight: 600; color: #333;
                overflow-wrap: anywhere; }
.pg-probes td { vertical-align: top; padding: 4px 6px; border-top: 1px solid #e3e6ea; }
.pg-probes thead th { border-bottom: 2px solid #d7dbe0; }
.pg-probes tbody th { width: 64px; white-space: nowrap; }
.pg-probe-text { white-space: pre-wrap; overflow-wrap: anywhere; line-height: 1.4; margin-bottom: 3px; }
.pg-probe.pg-degenerate { background: #fff4e5; border-left: 4px solid #D55E00; }
.pg-flag { display: inline-block; font-size: 12px; padding: 0 5px; margin: 1px 4px 1px 0; border-radius: 3px;
           background: #eef1f4; color: #333; }
.pg-flag.pg-bad { background: #D55E00; color: #fff; }
button.pg-vote { min-width: 0 !important; }
"""


def launch_options() -> dict:
    """Keyword arguments for ``Blocks.launch`` that carry the look (Gradio 6 takes theme and CSS at launch)."""
    return {"theme": theme(), "css": CSS}
