"""Operator tools: send overviews, tail predictions, audit delivery, manage topics."""
