# The two README commands are `make demo` and `make test`; both set up the environment first.
.PHONY: setup demo test test-slow clean

setup:
	scripts/setup_env.sh

demo: setup
	. ./activate.sh && emu-ros demo $(ARGS)

test: setup
	scripts/run_tests.sh $(ARGS)

test-slow: setup
	scripts/run_tests.sh -m slow $(ARGS)

clean:
	rm -rf build install log activate.sh
