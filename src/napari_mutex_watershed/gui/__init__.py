"""napari plugin: dock widget with live preview, reader and sample data.

Only this package imports Qt or napari; it wires the UI to the engine.
"""
