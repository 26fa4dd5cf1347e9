"""MNIST Studio's page: a module per tab, the page assembly, the error funnel; Gradio is used here only."""
