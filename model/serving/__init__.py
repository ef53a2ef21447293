"""What the service loads: artifacts, the embedding model, the head, the registry client.

Nothing here imports `model.training` (a test checks it), so serving installs without the
training extras.
"""
