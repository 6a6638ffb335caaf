# The two README commands are `make demo` and `make test`; both set up the environment first.
.PHONY: setup demo test test-slow world-model clean

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

# The shipped simulator world model from nothing (sim dataset, vision tokenizer, BPE, AR, DiDA; seeded; about
# an hour on a 2-core CPU): python -m finetune_embodied.world_model_recipe, then models/sim-aloha is replaced.
world-model: setup
	. ./activate.sh && python -m finetune_embodied.world_model_recipe --work runs/world_model --ship_dir models/sim-aloha $(ARGS)

clean:
	rm -rf build install log activate.sh build_jazzy install_jazzy install_test_jazzy log_jazzy activate_jazzy.sh
