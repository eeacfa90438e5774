# Short names for genqlib's three commands (see README).
.PHONY: run test lab
run:
	bash scripts/run.sh
test:
	bash scripts/test.sh
lab:
	bash scripts/lab.sh
