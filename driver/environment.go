package driver

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
)

// ErrEnvironment means a Python environment could not be built from its
// specification (requirements pip cannot resolve, a conda file conda
// refuses): the same would happen on any machine, so the job fails
// rather than trying another. The error quotes the tool's own message.
var ErrEnvironment = errors.New("the Python environment could not be built")

// DeployEnvironment: a Python environment built on the machine from
// Deployment.Environment, once per machine and content, and kept.
const DeployEnvironment DeploymentKind = "environment"

// Package managers of an Environment.
const (
	// ManagerPip: a virtualenv of the machine's Python with the
	// requirements installed by pip.
	ManagerPip = "pip"
	// ManagerConda: a conda environment created by the machine's conda.
	ManagerConda = "conda"
)

// Formats of a conda Environment's Spec.
const (
	// CondaEnvExport is the YAML of `conda env export` (environment.yml).
	CondaEnvExport = "env_export"
	// CondaList is the output of `conda list --explicit`.
	CondaList = "list"
)

// Environment is a Python environment to build on the machine: the
// specification's text, resolved where the job was submitted (a
// requirements file read, a virtualenv frozen, a poetry.lock translated,
// a conda environment exported), so that every machine builds the same
// environment.
type Environment struct {
	// Manager builds it: ManagerPip or ManagerConda.
	Manager string `json:"manager"`
	// Spec is the text of a requirements file (ManagerPip) or of a conda
	// environment file (ManagerConda).
	Spec string `json:"spec"`
	// Format is a conda Spec's format: CondaEnvExport or CondaList.
	Format string `json:"format,omitempty"`
	// Python is the Python version the environment needs, "3.11" or
	// "3.11.2"; "" takes the machine's python3, whatever its version.
	Python string `json:"python,omitempty"`
	// Pip are pip's options (ManagerPip).
	Pip PipOptions `json:"pip,omitzero"`
}

// PipOptions are the package index options given to pip.
type PipOptions struct {
	// IndexURL replaces PyPI (pip's --index-url).
	IndexURL string `json:"index_url,omitempty"`
	// ExtraIndexURLs are searched besides the index (--extra-index-url).
	ExtraIndexURLs []string `json:"extra_index_urls,omitempty"`
	// FindLinks are directories or pages of archives (--find-links), as
	// the worker's machine sees them.
	FindLinks []string `json:"find_links,omitempty"`
	// NoIndex searches FindLinks only (--no-index).
	NoIndex bool `json:"no_index,omitempty"`
}

// Args are the options as pip's command-line arguments.
func (o PipOptions) Args() []string {
	var args []string
	if o.IndexURL != "" {
		args = append(args, "--index-url", o.IndexURL)
	}
	for _, u := range o.ExtraIndexURLs {
		args = append(args, "--extra-index-url", u)
	}
	for _, l := range o.FindLinks {
		args = append(args, "--find-links", l)
	}
	if o.NoIndex {
		args = append(args, "--no-index")
	}
	return args
}

// environmentLayout changes when the way environments are built changes,
// so that no machine reuses an environment built the old way.
const environmentLayout = "meadowrun-environment-1"

// Hash identifies the environment by content: its manager, specification,
// Python version and pip options. Machines keep one environment per hash.
func (e *Environment) Hash() string {
	b, _ := json.Marshal(struct {
		Layout string
		Env    *Environment
	}{environmentLayout, e})
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:])
}
