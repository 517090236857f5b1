// Command kube-controller-manager runs the Deployment/ReplicaSet, endpoint,
// ServiceAccount-token and namespace controllers of the dev cluster with a node
// (akv_devcluster.node), from the pinned k8s.io/kubernetes.
package main

import (
	"os"

	"k8s.io/component-base/cli"
	"k8s.io/kubernetes/cmd/kube-controller-manager/app"
)

func main() {
	os.Exit(cli.Run(app.NewControllerManagerCommand()))
}
