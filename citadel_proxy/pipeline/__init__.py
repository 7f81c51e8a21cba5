"""The request pipeline: a context handed through composable stages to the upstream call."""
