//! The kiln.dev/v1alpha1 API.
