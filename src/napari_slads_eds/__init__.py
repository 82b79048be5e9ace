"""napari-slads-eds: dynamic sparse sampling (SLADS) of EDS phase maps in the SEM.

The library API is plain numpy/scipy and imports neither Qt nor TensorFlow; the Keras
spectrum classifier (:mod:`napari_slads_eds.classifier`) is used inside the engine
process only (:class:`napari_slads_eds.engine.Engine`).

Pipeline::

    micrograph --segment_phases--> phase map --SimulatedSpecimen--> measure(positions)
    spectra --SpectrumClassifier (engine)--> labels --Sampler--> reconstruction, ERD, next positions
"""

__version__ = "0.1.0"

from ._validation import InputError
from .config import RunSettings, SamplingConfig
from .engine import Engine, EngineError, JobCancelled
from .erd import train_erd
from .erd_database import TrainingDatabase, build_training_database, rd_approximation
from .erd_models import LinearERD
from .features import poly2, slads_features
from .metrics import confusion_matrix, total_distortion
from .pipeline import prepare_experiment, resume_experiment, run_experiment
from .reconstruction import reconstruct
from .results import load_run, write_run
from .run_folder import RunResult
from .sampling import Sampler
from .scan_orders import halton_order, initial_positions, random_order
from .segmentation import majority_downsample, read_micrograph, segment_phases, split_regions
from .specimen import ReplaySpecimen, SimulatedSpecimen, Specimen
from .sweep import sweep
from .spectra import EnergyAxis, ReferenceSpectra, Spectrum, make_reference_spectra, read_spectrum

__all__ = [
    "InputError", "Engine", "EngineError", "JobCancelled",
    "LinearERD", "TrainingDatabase", "build_training_database", "rd_approximation", "train_erd",
    "poly2", "slads_features", "confusion_matrix", "total_distortion",
    "RunSettings", "SamplingConfig", "RunResult", "prepare_experiment", "run_experiment", "resume_experiment", "reconstruct", "load_run", "write_run",
    "Sampler", "halton_order", "initial_positions", "random_order",
    "majority_downsample", "read_micrograph", "segment_phases", "split_regions",
    "Specimen", "SimulatedSpecimen", "ReplaySpecimen", "EnergyAxis", "ReferenceSpectra", "Spectrum", "make_reference_spectra",
    "read_spectrum", "sweep",
]
