# Plain targets for local use and CI. Override the interpreter with `make PYTHON=python3 ...`.
PYTHON ?= python
SPHINXOPTS ?= -W --keep-going
SPHINXBUILD = $(PYTHON) -m sphinx
DOCS_SRC = docs
DOCS_OUT = docs/_build/html

.PHONY: help test docs docs-noplot docs-clean

help:
	@echo "make test         run the test suite (python -m pytest -q)"
	@echo "make docs         build the HTML docs, gallery run in quick mode, warnings as errors"
	@echo "make docs-noplot  build the HTML docs without running the gallery examples"
	@echo "make docs-clean   remove the built docs and generated pages"

test:
	$(PYTHON) -m pytest -q

docs:
	SKLEARN_EOS_DOCS_QUICK=1 $(SPHINXBUILD) -b html $(SPHINXOPTS) $(DOCS_SRC) $(DOCS_OUT)

docs-noplot:
	SKLEARN_EOS_DOCS_NO_GALLERY=1 $(SPHINXBUILD) -b html $(SPHINXOPTS) $(DOCS_SRC) $(DOCS_OUT)

docs-clean:
	rm -rf docs/_build docs/generated docs/auto_examples docs/gen_modules docs/sg_execution_times.rst
