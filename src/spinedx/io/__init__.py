"""Readers for images and annotations, converting everything into spinedx's internal forms."""
