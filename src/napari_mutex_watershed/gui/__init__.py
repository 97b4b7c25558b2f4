"""napari plugin: dock widget with live preview, reader and sample data.

Only this package imports Qt or napari, and only in the modules napari itself loads (the
widget and its panels), never at this package's import: the core install (no extra) has no
GUI stack, and the preview's worker process, started from here, runs without one. The GUI
needs the extra ``all`` (napari, magicgui, qtpy and PyQt6).
"""
