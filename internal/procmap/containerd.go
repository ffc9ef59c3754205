package procmap

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	containers "github.com/containerd/containerd/api/services/containers/v1"
	namespaces "github.com/containerd/containerd/api/services/namespaces/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// labelNerdctlName is the label `nerdctl run --name` gives the container.
const labelNerdctlName = "nerdctl/name"

// namespaceKey is the gRPC metadata key that names the containerd namespace a request is about.
const namespaceKey = "containerd-namespace"

// containerdOnly is the CRI runtime's name, as criName keeps it, for a socket that does not serve the CRI:
// containerd's with its CRI plugin off serves only containerd's own API.
const containerdOnly = "containerd without CRI"

// namespacesFor is how long containerd's namespace list is used before it is asked again. A container found in
// none of them has the list asked again at once (its namespace may be newer than the list).
const namespacesFor = 30 * time.Second

// maxNamespaces bounds the namespaces a container is looked for in: each costs a request.
const maxNamespaces = 64

// parallelGets is how many namespaces are asked at once: one after another, many namespaces on a loaded daemon
// would outlast the timeout.
const parallelGets = 16

// containerdName asks containerd's own Containers service, in each namespace, for a container the CRI does not
// know: nerdctl and ctr make theirs outside the CRI's namespace (k8s.io), in "default" or one the user names.
// The zero criContainer where no namespace holds it; err is set where containerd did not answer.
func (r *Resolver) containerdName(conn *grpc.ClientConn, cid string) (c criContainer, err error) {
	ctx, cancel := context.WithTimeout(r.ctx, r.opts.Timeout)
	defer cancel()
	r.mu.Lock()
	nss, listedAt := r.ctrdNS, r.ctrdNSAt
	r.mu.Unlock()
	listed := false
	if listedAt.IsZero() || time.Since(listedAt) >= namespacesFor {
		if nss, err = r.listNamespaces(ctx, conn); err != nil {
			return criContainer{}, err
		}
		listed = true
	}
	cs := containers.NewContainersClient(conn)
	asked := map[string]bool{}
	for {
		var ask []string
		for _, ns := range nss {
			if !asked[ns] {
				asked[ns] = true
				ask = append(ask, ns)
			}
		}
		if c, found, err := getIn(ctx, cs, cid, ask); found || err != nil {
			return c, err
		}
		if listed {
			return criContainer{}, nil
		}
		if nss, err = r.listNamespaces(ctx, conn); err != nil {
			return criContainer{}, err
		}
		listed = true
	}
}

// getIn asks containerd for a container in each of namespaces, parallelGets at a time; found says one held it. err
// is set where a namespace neither held it nor said it did not.
func getIn(ctx context.Context, cs containers.ContainersClient, cid string, nss []string) (c criContainer, found bool, err error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	type answer struct {
		c     criContainer
		found bool
		err   error
	}
	answers := make(chan answer, len(nss))
	slots := make(chan struct{}, parallelGets)
	var wg sync.WaitGroup
	defer wg.Wait() // after cancel: those left end at once
	for _, ns := range nss {
		wg.Go(func() {
			select {
			case slots <- struct{}{}:
				defer func() { <-slots }()
			case <-ctx.Done():
				answers <- answer{err: ctx.Err()}
				return
			}
			resp, err := cs.Get(metadata.AppendToOutgoingContext(ctx, namespaceKey, ns), &containers.GetContainerRequest{ID: cid})
			switch {
			case err == nil:
				answers <- answer{c: labelledContainer(resp.GetContainer().GetLabels()), found: true}
			case status.Code(err) == codes.NotFound: // not in this namespace
				answers <- answer{}
			default:
				answers <- answer{err: fmt.Errorf("containerd Containers.Get in namespace %s: %w", ns, err)}
			}
		})
	}
	for range nss {
		a := <-answers
		if a.found {
			return a.c, true, nil
		}
		if a.err != nil && err == nil {
			err = a.err
		}
	}
	return criContainer{}, false, err
}

// listNamespaces asks containerd for its namespaces and keeps them (at most maxNamespaces, those a request can
// name).
func (r *Resolver) listNamespaces(ctx context.Context, conn *grpc.ClientConn) ([]string, error) {
	resp, err := again(ctx, func(o ...grpc.CallOption) (*namespaces.ListNamespacesResponse, error) {
		return namespaces.NewNamespacesClient(conn).List(ctx, &namespaces.ListNamespacesRequest{}, o...)
	})
	if err != nil {
		return nil, fmt.Errorf("containerd Namespaces.List: %w", err)
	}
	var nss []string
	for _, n := range resp.GetNamespaces() {
		if name := n.GetName(); validNamespace(name) && len(nss) < maxNamespaces {
			nss = append(nss, name)
		}
	}
	// "default" first: where nerdctl and ctr put containers unless told otherwise.
	slices.SortStableFunc(nss, func(a, b string) int {
		switch {
		case a == b:
			return 0
		case a == "default":
			return -1
		case b == "default":
			return 1
		}
		return 0
	})
	r.mu.Lock()
	r.ctrdNS, r.ctrdNSAt = nss, time.Now()
	r.mu.Unlock()
	return nss, nil
}

// validNamespace checks a namespace name as containerd does (letters, digits, '.', '_', '-'; at most 76 bytes):
// anything else could not ride in a request's metadata.
func validNamespace(s string) bool {
	if s == "" || len(s) > 76 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '.' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// labelledContainer reads the labels of a container containerd knows outside the CRI: nerdctl's name, else the
// kubelet's labels (a pod's container made another way), else no name (an ID alone is no name). Every value is
// bounded.
func labelledContainer(l map[string]string) criContainer {
	c := criContainer{found: true, runtime: RuntimeContainerd}
	if name := bound(l[labelNerdctlName]); name != "" {
		c.name = name
		return c
	}
	c.name, c.pod, c.namespace, c.podUID = kubeLabels(l)
	return c
}
