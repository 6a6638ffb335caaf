# The two README commands are `make demo` and `make test`; both set up the environment first.
.PHONY: setup demo test test-slow clean

setup:
	scripts/setup_env.sh

demo: setup
	. ./activate.sh && emu-ros demo $(ARGS)

# The main suite, then the second job: the package on the robots' ROS (Jazzy wheels, Python 3.10;
# skipped with a reason where no Python 3.10 exists, and when ARGS picks particular tests).
test: setup
	scripts/run_tests.sh $(ARGS)
	$(if $(ARGS),,scripts/test_jazzy.sh)

test-slow: setup
	scripts/run_tests.sh -m slow $(ARGS)

clean:
	rm -rf build install log activate.sh build_jazzy install_jazzy install_test_jazzy log_jazzy activate_jazzy.sh
