"""The operator's input model: typed custom resources and offline CRD schema checks."""
