// Command kube-apiserver is the upstream API server, built from the
// k8s.io/kubernetes module at the version pinned in go.mod, so that tests get a
// real control plane without downloading release binaries. go.mod is generated
// by `python -m akv_issuer.devcluster.binaries gen-gomod`; do not edit it by hand.
package main

import (
	"os"

	"k8s.io/component-base/cli"
	"k8s.io/kubernetes/cmd/kube-apiserver/app"
)

func main() {
	os.Exit(cli.Run(app.NewAPIServerCommand()))
}
