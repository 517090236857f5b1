// Command kubelet is the upstream kubelet of the dev cluster's node
// (akv_devcluster.node), built from the k8s.io/kubernetes module pinned in
// ../../go.mod, the same version as hack/kube-apiserver.
package main

import (
	"context"
	"os"

	"k8s.io/component-base/cli"
	"k8s.io/kubernetes/cmd/kubelet/app"
)

func main() {
	os.Exit(cli.Run(app.NewKubeletCommand(context.Background())))
}
