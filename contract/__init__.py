"""The seam between training and serving: the model card schema and the bitstream format.

Training imports from here; the service reads what training wrote through the same definitions, so the
two can never disagree about a field.
"""
