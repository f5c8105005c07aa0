"""Spleen segmentation and measurement in 2-D ultrasound with a Flax U-Net."""
