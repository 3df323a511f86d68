"""`fileconsul ui`: the fleet on a web page that stays live, and, when allowed, halt and
resume. Part of the command line: it reads through the commands and the fleet, renders with
`cli.render`, and knows neither click nor Consul's HTTP."""
