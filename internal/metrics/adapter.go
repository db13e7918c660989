package metrics

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/chorus-rt/chorus/adapter"
)

// Cluster is what the metrics read from the Redis adapter at scrape time.
type Cluster interface {
	// Status returns the link's state and the adapter's running counts.
	Status() adapter.RedisStatus
	// Nodes returns the number of nodes in the cluster, this one included.
	Nodes(ctx context.Context) (int, error)
}

// nodesTimeout bounds the Redis round trip a scrape makes to count the nodes.
const nodesTimeout = time.Second

// WatchCluster registers the adapter's metrics, read from c at each scrape:
// chorus_adapter_{published,received,dropped,decode_errors,request_timeouts}_total, chorus_redis_up
// and chorus_cluster_nodes (asked of Redis while it is up; absent while it is down).
func (m *Metrics) WatchCluster(c Cluster) error {
	return m.reg.Register(&clusterCollector{c: c})
}

type clusterCollector struct{ c Cluster }

var (
	descPublished = prometheus.NewDesc(Namespace+"_adapter_published_total", "Messages the Redis adapter published (broadcasts, requests and responses to other nodes).", nil, nil)
	descReceived  = prometheus.NewDesc(Namespace+"_adapter_received_total", "Messages the Redis adapter received from Redis.", nil, nil)
	descDropped   = prometheus.NewDesc(Namespace+"_adapter_dropped_total", "Messages the Redis adapter could not publish (queue full during an outage, or a failed pipeline).", nil, nil)
	descDecodeErr = prometheus.NewDesc(Namespace+"_adapter_decode_errors_total", "Messages from Redis that did not decode and were ignored.", nil, nil)
	descTimeouts  = prometheus.NewDesc(Namespace+"_adapter_request_timeouts_total", "Cluster requests (fetch sockets, server-side emit with ack, broadcast with ack) some node did not answer in time.", nil, nil)
	descRedisUp   = prometheus.NewDesc(Namespace+"_redis_up", "1 while the link to Redis is up (subscribed and publishing), else 0.", nil, nil)
	descNodes     = prometheus.NewDesc(Namespace+"_cluster_nodes", "Nodes in the cluster (subscribers of the root namespace's request channel), this one included.", nil, nil)
)

func (cc *clusterCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descPublished, descReceived, descDropped, descDecodeErr, descTimeouts, descRedisUp, descNodes} {
		ch <- d
	}
}

func (cc *clusterCollector) Collect(ch chan<- prometheus.Metric) {
	st := cc.c.Status()
	ch <- prometheus.MustNewConstMetric(descPublished, prometheus.CounterValue, float64(st.Published))
	ch <- prometheus.MustNewConstMetric(descReceived, prometheus.CounterValue, float64(st.Received))
	ch <- prometheus.MustNewConstMetric(descDropped, prometheus.CounterValue, float64(st.Dropped))
	ch <- prometheus.MustNewConstMetric(descDecodeErr, prometheus.CounterValue, float64(st.Malformed))
	ch <- prometheus.MustNewConstMetric(descTimeouts, prometheus.CounterValue, float64(st.Timeouts))
	up := 0.0
	if st.Up {
		up = 1
	}
	ch <- prometheus.MustNewConstMetric(descRedisUp, prometheus.GaugeValue, up)
	if !st.Up {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), nodesTimeout)
	defer cancel()
	if n, err := cc.c.Nodes(ctx); err == nil {
		ch <- prometheus.MustNewConstMetric(descNodes, prometheus.GaugeValue, float64(n))
	}
}
