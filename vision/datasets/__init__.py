"""Datasets of the vision vertical: synthetic inspection plates, VOC import, versions."""
