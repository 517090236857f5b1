// A stand-in for monis.app/mlog, the logging package the Azure Workload
// Identity webhook uses: the Go module proxy refuses every version of it (403),
// so ../go.mod replaces it with this directory. It offers only the identifiers
// the webhook's main and pkg/webhook call, on top of klog's logr logger.

module monis.app/mlog

go 1.23

require (
	github.com/go-logr/logr v1.4.3
	k8s.io/klog/v2 v2.130.1
)
