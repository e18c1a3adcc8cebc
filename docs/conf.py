"""Sphinx configuration of the sklearn-eos documentation.

Build from the repository root with ``make docs`` (gallery executed in quick mode) or
``make docs-noplot`` (gallery pages without running the examples). Environment switches:

* ``SKLEARN_EOS_DOCS_QUICK=1``: run the gallery examples in quick mode (sets
  ``SKLEARN_EOS_QUICK=1``, which every example reads, before any example runs);
* ``SKLEARN_EOS_DOCS_NO_GALLERY=1``: do not execute the examples (``plot_gallery = False``).

Nothing here needs the network: no intersphinx, the bundled ``alabaster`` theme.
"""

import os
import sys
import warnings
from pathlib import Path

import sklearn_eos

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _bench_tables import write_tables  # noqa: E402

# benchmark tables from benchmarks/results/*.json -> docs/generated/bench/*.inc
write_tables()

# -- switches ---------------------------------------------------------------------------
_TRUE = {"1", "true", "yes", "on"}
QUICK = os.environ.get("SKLEARN_EOS_DOCS_QUICK", "").lower() in _TRUE
NO_GALLERY = os.environ.get("SKLEARN_EOS_DOCS_NO_GALLERY", "").lower() in _TRUE
if QUICK:
    # the examples run in this process (and their joblib workers inherit the environment)
    os.environ["SKLEARN_EOS_QUICK"] = "1"
os.environ.setdefault("MPLBACKEND", "Agg")

# -- project ----------------------------------------------------------------------------
project = "sklearn-eos"
author = "the sklearn-eos developers"
copyright = "the sklearn-eos developers, BSD-3-Clause"
release = sklearn_eos.__version__
version = ".".join(release.split(".")[:2])

# -- general ----------------------------------------------------------------------------
extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.mathjax",
    "numpydoc",
    "sphinx_gallery.gen_gallery",
]
templates_path = ["_templates"]
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store", "**/*.ipynb"]
root_doc = "index"

# Single backticks (`FullBatch`, `top_eigenpairs`, ...) are used throughout the package's
# docstrings as cross-references; resolve them as Python objects where possible. With
# ``nitpicky = False`` a target that does not resolve (a private helper) renders as code
# without a warning.
default_role = "py:obj"
nitpicky = False

# -- autodoc / autosummary ---------------------------------------------------------------
autosummary_generate = True  # stub pages in docs/generated/ (ignored by git)
autosummary_imported_members = False
autodoc_default_options = {"inherited-members": False}
autodoc_typehints = "none"  # the docstrings carry the types (numpydoc)

# -- numpydoc ---------------------------------------------------------------------------
# The class template lists the public methods itself; numpydoc's own member tables would
# duplicate them (and warn about autosummary stubs that do not exist).
numpydoc_show_class_members = False
numpydoc_show_inherited_class_members = False
numpydoc_class_members_toctree = False
numpydoc_attributes_as_param_list = True
numpydoc_xref_param_type = False
# No docstring validation during the build (numpydoc's default); run
# ``python -m numpydoc lint sklearn_eos/*.py`` to check the docstrings separately.
numpydoc_validation_checks = set()

# -- sphinx-gallery ---------------------------------------------------------------------
sphinx_gallery_conf = {
    "examples_dirs": "../examples",
    "gallery_dirs": "auto_examples",
    "filename_pattern": "/plot_",
    "ignore_pattern": r"__init__\.py",
    "download_all_examples": False,
    "remove_config_comments": True,
    "within_subsection_order": "FileNameSortKey",
    "matplotlib_animations": False,
    "show_memory": False,
    "reset_modules": ("matplotlib",),
    # "Examples using X" on each API page
    "doc_module": ("sklearn_eos",),
    "backreferences_dir": "gen_modules/backreferences",
    "inspect_global_variables": False,
}
# sphinx-gallery reads this top-level value (it overrides the dict's entry); it is also
# what ``sphinx-build -D plot_gallery=0`` sets
plot_gallery = "False" if NO_GALLERY else "True"

# matplotlib in a headless build: no "non-interactive backend" chatter
warnings.filterwarnings("ignore", category=UserWarning,
                        message="Matplotlib is currently using agg, which is a non-GUI backend")

# -- HTML -------------------------------------------------------------------------------
html_theme = "alabaster"
html_title = f"sklearn-eos {release}"
html_static_path = []
html_theme_options = {
    "description": "scikit-learn estimators trained by full-batch gradient descent at the "
                   "edge of stability",
    "fixed_sidebar": False,
    "page_width": "1100px",
    "sidebar_width": "230px",
}
html_sidebars = {"**": ["about.html", "navigation.html", "relations.html", "searchbox.html"]}
html_show_sourcelink = False
