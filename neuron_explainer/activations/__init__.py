"""Neuron records (top-activating dataset examples per node): the data types and their files
(`records`), the registry of datasets the server may read (`datasets`)."""
