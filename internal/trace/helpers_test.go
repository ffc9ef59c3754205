package trace

import "math"

// val and str read the row type's optional fields as the columnar reader gives them.
func val(p *float64) float64 {
	if p == nil {
		return math.NaN()
	}
	return *p
}

func str(p *string) string {
	if p == nil {
		return ""
	}
	return *p
}
