"""One recipe per shipped checkpoint (see train/recipe.py): each module defines RECIPE."""
