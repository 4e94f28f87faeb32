"""Plotly figure builders by subject: plain lists, arrays, DataFrames and dicts in, ``go.Figure`` out.

No torch and no gradio here. ``style`` holds the one palette (one fixed colour per variant, used by every figure of
every tab) and the template; ``answers`` the Compare and Fine-tune figures; ``dpo``, ``kto`` and ``prospect`` the
Inspect tab's; ``leaderboard`` the vote leaderboard's; ``family`` the method family's. The builders are re-exported
here, so callers write ``plots.dpo_scatter_figure(...)``.
"""

from playground.plots.answers import (
    COMPARE_METRICS,
    before_after_figure,
    compare_metrics_figure,
    runs_curves_figure,
    training_curves_figure,
)
from playground.plots.dpo import dpo_bars_figure, dpo_scatter_figure, dpo_waterfall_figure
from playground.plots.family import family_figure
from playground.plots.kto import kto_loss_figure, kto_scatter_figure, kto_value_curve_figure
from playground.plots.leaderboard import strengths_figure, win_matrix_figure
from playground.plots.prospect import (
    CORRECTED_LABEL,
    SOURCE_LABEL,
    alpha_search_figure,
    objective_comparison_figure,
    prospect_bars_figure,
    value_histogram_figure,
)
from playground.plots.style import (
    BAD_COLOR,
    CORRECT_COLOR,
    GOOD_COLOR,
    GUIDE_COLOR,
    OKABE_ITO,
    SOURCE_COLOR,
    TEMPLATE,
    USER_COLORS,
    VARIANT_COLORS,
    empty_figure,
    variant_color,
)

__all__ = [
    "family_figure",
    "BAD_COLOR", "COMPARE_METRICS", "CORRECTED_LABEL", "CORRECT_COLOR", "GOOD_COLOR", "GUIDE_COLOR", "OKABE_ITO",
    "SOURCE_COLOR", "SOURCE_LABEL", "TEMPLATE", "USER_COLORS", "VARIANT_COLORS", "alpha_search_figure",
    "before_after_figure", "compare_metrics_figure", "dpo_bars_figure", "dpo_scatter_figure", "dpo_waterfall_figure",
    "empty_figure", "kto_loss_figure", "kto_scatter_figure", "kto_value_curve_figure", "objective_comparison_figure",
    "prospect_bars_figure", "runs_curves_figure", "strengths_figure", "training_curves_figure",
    "value_histogram_figure", "variant_color", "win_matrix_figure",
]
