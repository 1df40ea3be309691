"""Evaluation: the shared loop, dataset resolution, reports and the command-line tools."""
