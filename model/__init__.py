"""Everything about the genre model: data, embedder, classifier head, artifact, training, evaluation."""
