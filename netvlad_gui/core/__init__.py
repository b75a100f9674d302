"""The headless engine: geotags, model, features, index, locate, train and eval. Never imports Qt."""
