// Command kubectl is the upstream kubectl, built from the same module graph as
// kube-apiserver so that client and server versions always match.
package main

import (
	"k8s.io/component-base/cli"
	kubectl "k8s.io/kubectl/pkg/cmd"
	"k8s.io/kubectl/pkg/cmd/util"
)

func main() {
	// RunNoErrOutput leaves error printing to CheckErr, which formats API
	// errors the way kubectl users expect and sets the exit code.
	if err := cli.RunNoErrOutput(kubectl.NewDefaultKubectlCommand()); err != nil {
		util.CheckErr(err)
	}
}
