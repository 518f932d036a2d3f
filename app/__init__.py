"""The LM4LV web demo (Gradio). Start it with `python app.py`."""
