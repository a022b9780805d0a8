// Package pyvm holds the test that runs the Python package's
// kernel-dependent cases (memory limits and OOM) inside the VM, where the
// memory controller exists. scripts/vm-test.sh packs Debian's python3, the
// python/ package and the cgpool binary for it; on the host those cases run
// (and skip with their reason) in the ordinary Python test run.
package pyvm
