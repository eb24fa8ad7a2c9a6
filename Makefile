# fraud-cd: two commands on a fresh machine with Python 3.11 and make.
#   make demo   install into .venv, then run one whole release cycle through Airflow
#   make test   install into .venv, then run every test (the end-to-end cycles beside the rest)
#   make up     install into .venv, then run Airflow for real (API server and UI on 127.0.0.1:8080,
#               scheduler, DAG processor, triggerer) in the background; make down stops it
#   make celery-deps   redis-server and the `celery` extra, for `fraudcd up --executor celery --workers 2`
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

export AIRFLOW_HOME := $(CURDIR)
export AIRFLOW__CORE__DAGS_FOLDER := $(CURDIR)/dags
export AIRFLOW__DATABASE__SQL_ALCHEMY_CONN := sqlite:///$(CURDIR)/var/airflow/airflow.db
export AIRFLOW__LOGGING__BASE_LOG_FOLDER := $(CURDIR)/var/airflow/logs

.PHONY: install demo test up down clean browser celery-deps

# The browser tests drive the system's Chromium (Debian's package) through Playwright; `make test` installs it
# when it is missing (as root, or through sudo). FRAUDCD_CHROMIUM points the tests at another binary.
CHROMIUM ?= /usr/bin/chromium
export FRAUDCD_CHROMIUM := $(CHROMIUM)
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

browser: $(CHROMIUM)

$(CHROMIUM):
	@command -v apt-get >/dev/null || { echo "The browser tests need Chromium at $(CHROMIUM); this machine has no apt-get: install it, or set CHROMIUM=/path/to/chromium" >&2; exit 2; }
	$(SUDO) apt-get update -qq
	$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null

# Past one machine (`fraudcd up --executor celery`, tests/dags/test_celery.py): Debian's redis-server as the
# Celery broker, and the `celery` extra (Airflow's Celery provider, the redis client); `make test` installs both.
REDIS_SERVER ?= /usr/bin/redis-server
CELERY_STAMP := $(VENV)/.celery-installed

celery-deps: $(REDIS_SERVER) $(CELERY_STAMP)

$(REDIS_SERVER):
	@command -v apt-get >/dev/null || { echo "The Celery executor needs redis-server at $(REDIS_SERVER); this machine has no apt-get: install it, or set REDIS_SERVER=/path/to/redis-server" >&2; exit 2; }
	$(SUDO) apt-get update -qq
	$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null

$(CELERY_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[test,celery]'
	touch $(CELERY_STAMP)

install: $(STAMP)

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 11), "fraud-cd needs Python 3.11; got " + sys.version' 
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

demo: install
	$(BIN)/fraudcd demo

up: install
	$(BIN)/fraudcd up

down: install
	$(BIN)/fraudcd down

# Three lanes at once, so that what waits (on paced live traffic, a scheduler's polling, Celery workers) leaves
# the cores to what computes:
# - the end-to-end cycles (tests/test_e2e_cycle.py), most of their minutes waiting on paced live traffic;
# - the real deployments (tests/dags/test_up_down.py: `fraudcd up`, a scheduler, an approval over REST and one in
#   the UI through Chromium; tests/dags/test_celery.py: redis, PostgreSQL and two Celery workers backfilling a
#   month of training sets), waiting on their schedulers, with shorter tests (your own data through Airflow, a
#   monitored world, the training-set DAG and four statistical batteries);
# - the rest, niced, so the waiting lanes get the CPU when they need it.
# Two lanes took 16 min 53 s from a fresh clone once the Celery run joined (2026-12-02: the rest 859 s, the
# other lane 948 s, 1.6 cores busy on average). The two lanes beside the rest write their logs to var/; their
# output follows the rest's; any lane failing fails the target.
E2E_CYCLES := tests/test_e2e_cycle.py
E2E_DEPLOY := tests/dags/test_up_down.py tests/dags/test_celery.py tests/test_own_data.py \
	tests/release/orchestration/test_monitoring_run.py tests/release/rollout/test_monitoring.py \
	tests/simulation/test_world.py tests/release/data/test_label_completeness.py tests/dags/test_training_set_dag.py \
	tests/release/rollout/test_matured_performance.py
E2E := $(E2E_CYCLES) $(E2E_DEPLOY)

test: install browser celery-deps
	@mkdir -p var
	@trap 'kill $$cycles $$deploy 2>/dev/null' INT TERM; \
	$(BIN)/python -m pytest $(E2E_CYCLES) > var/test-e2e.log 2>&1 & cycles=$$!; \
	$(BIN)/python -m pytest $(E2E_DEPLOY) > var/test-deploy.log 2>&1 & deploy=$$!; \
	nice -n 5 $(BIN)/python -m pytest $(addprefix --ignore=,$(E2E)); rest=$$?; \
	wait $$cycles; cycles_rc=$$?; wait $$deploy; deploy_rc=$$?; \
	echo "---- $(E2E_CYCLES), run beside the tests above (their log: var/test-e2e.log)"; cat var/test-e2e.log; \
	echo "---- $(E2E_DEPLOY), run beside them too (their log: var/test-deploy.log)"; cat var/test-deploy.log; \
	exit $$(( rest || cycles_rc || deploy_rc ))

clean:
	rm -rf var .pytest_cache
