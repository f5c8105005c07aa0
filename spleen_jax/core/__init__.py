"""Pure JAX/Flax pieces: model, losses, metric math and train/eval steps.

Nothing under this package imports TensorFlow, TFDS or clu, so it runs where
only jax, flax, optax and numpy are installed.
"""
