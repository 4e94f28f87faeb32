"""The Gradio page: one module per tab, the page builder and the headless API. The only package importing gradio."""
