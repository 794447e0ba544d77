"""HTTP APIs served next to the Gradio app (no gradio here): the AUTOMATIC1111-compatible one."""
