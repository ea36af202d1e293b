"""The paper's main experiment: traits transmitted through number sequences."""
