//! Resolving the model's paths against the project root.
