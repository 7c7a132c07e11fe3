// Package pyenv builds and caches the Python environments of Python
// deployments on the machine a worker runs on, and resolves their
// specifications where a job is submitted.
//
// The submitting side turns every kind of Python deployment into a
// driver.Environment, the specification's text: a requirements file as
// it is, a virtualenv frozen with `pip freeze --exclude-editable`, a
// poetry.lock translated to pinned requirements, a conda environment
// exported with `conda env export`, or a conda environment file.
//
// The machine's side, Builder, builds an environment once per content
// hash (specification, Python version, pip options) into a directory of
// its own: a virtualenv made with `python -m venv` and filled with
// `pip install -r`, or a prefix made with `conda env create -p`. A marker
// file, renamed into place when the build succeeded, says that the
// directory is ready; a lock file serialises builders of the same hash
// across processes, and builders of one process share one build. A later
// worker that needs the same environment finds the marker and starts at
// once.
package pyenv
