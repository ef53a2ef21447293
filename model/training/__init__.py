"""What only training uses: data loading and cleaning, splits, EDA, candidate selection, fine-tuning,
training and evaluation (`genre-train`, `genre-select`, `genre-eda`, `genre-eval`)."""
