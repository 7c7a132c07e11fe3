package driver

// Priced is implemented by a Worker whose host knows what it costs: the
// price of its machine (for the market it runs in) times the share of the
// machine the worker holds. The coordinator charges each job for the
// time its workers are lent to it (JobCompletion.CostUSD, a map's Cost);
// hosts of machines that cost nothing per hour implement nothing.
type Priced interface {
	// CostPerHour is the worker's cost in US dollars an hour.
	CostPerHour() float64
}
