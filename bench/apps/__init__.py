"""Hand-written baselines: the Flask apps a user would write instead of using the platform."""
