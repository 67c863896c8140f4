"""What the notebooks show and how they run: figures, the notebook set-up, walkthroughs and the papermill
pipeline."""
