// Command kube-proxy routes ClusterIP Services inside the dev cluster's node
// network namespace (akv_devcluster.node), from the pinned k8s.io/kubernetes.
package main

import (
	"os"

	"k8s.io/component-base/cli"
	"k8s.io/kubernetes/cmd/kube-proxy/app"
)

func main() {
	os.Exit(cli.Run(app.NewProxyCommand()))
}
