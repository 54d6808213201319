"""Datasets, label corruption and tf.data pipelines for GDW."""
from gdw_tf.data.pairing import with_meta
