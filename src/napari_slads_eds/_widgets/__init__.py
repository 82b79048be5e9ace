"""napari dock widgets of napari-slads-eds (one module per widget).

=====================  ==========================================================
``micrograph.py``      Micrograph & phases: grey image -> phase Labels layer
``specimen.py``        Simulated object: phase layer -> ground-truth layer + specimen
``training.py``        Training: spectrum classifier and ERD model (engine jobs)
``sampling.py``        Sampling run: live SLADS run driven by the engine
``workflow.py``        the four steps as tabs of one dock (the plugin's first widget)
``_session.py``        one engine process per viewer, relayed through thread_workers
``_common.py``         layer combo boxes, error reporting, form helpers
``plots.py``           matplotlib plot docks (TD curve, spectrum, histogram)
=====================  ==========================================================

The widgets are thin: they translate between napari layers and the core / engine API.
Nothing here imports TensorFlow; training and the sampling loop run in the engine
process (:class:`napari_slads_eds.engine.Engine`).
"""
