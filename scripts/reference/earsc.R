#!/usr/bin/env Rscript
# Reference values for yujing's EARS detectors (src/pipeline/detect/ears.rs), computed by
# R's surveillance::earsC (Debian r-cran-surveillance; install with scripts/lib/r.sh).
#
# Usage:
#   Rscript scripts/reference/earsc.R IN.csv OUT.csv [--baseline=7] [--alpha=A] [--min-sigma=0]
#                                                    [--methods=C1,C2,C3]
#
# IN.csv   columns series,t,y (a header line; long format, one row per day; t is the 0-based
#          day index, consecutive within a series; any number of series).
# OUT.csv  columns series,method,t,observed,upperbound,alarm for every day in the package's
#          default range (C1 from t = B, C2 from B + 2, C3 from B + 4). Numbers with 17
#          significant digits; NA written as NA; alarm as 0/1/NA.
# Without --alpha each method gets the package default (0.001 for C1/C2, 0.025 for C3).
#
# Known package limitation: for C3 on a series of exactly B + 5 days (a range of length 1)
# earsC stops with "number of items to replace is not a multiple of replacement length";
# such a series is reported on stderr and skipped.

suppressPackageStartupMessages(library(surveillance))

args <- commandArgs(trailingOnly = TRUE)
positional <- args[!grepl("^--", args)]
options <- args[grepl("^--", args)]
if (length(positional) != 2) {
  stop("usage: earsc.R IN.csv OUT.csv [--baseline=7] [--alpha=A] [--min-sigma=0] [--methods=C1,C2,C3]")
}
option <- function(name, default) {
  hit <- options[startsWith(options, paste0("--", name, "="))]
  if (length(hit) == 0) default else sub("^[^=]*=", "", hit[length(hit)])
}
baseline <- as.integer(option("baseline", "7"))
alpha <- option("alpha", NA)
min_sigma <- as.numeric(option("min-sigma", "0"))
methods <- strsplit(option("methods", "C1,C2,C3"), ",")[[1]]

input <- read.csv(positional[1], colClasses = c("character", "integer", "numeric"))
stopifnot(identical(names(input), c("series", "t", "y")))

fmt <- function(x) ifelse(is.na(x), "NA", sprintf("%.17g", x))
rows <- list()
for (id in unique(input$series)) {
  one <- input[input$series == id, ]
  one <- one[order(one$t), ]
  stopifnot(all(diff(one$t) == 1))
  observed <- matrix(one$y, ncol = 1)
  for (method in methods) {
    lag <- switch(method, C1 = baseline, C2 = baseline + 2, C3 = baseline + 4)
    if (nrow(observed) <= lag) next
    control <- list(method = method, baseline = baseline, minSigma = min_sigma)
    if (!is.na(alpha)) control$alpha <- as.numeric(alpha)
    result <- tryCatch(
      earsC(sts(observed = observed), control = control),
      error = function(e) {
        message(sprintf("earsc.R: series %s, %s: earsC failed: %s", id, method, conditionMessage(e)))
        NULL
      }
    )
    if (is.null(result)) next
    range <- result@control$range
    rows[[length(rows) + 1]] <- data.frame(
      series = id,
      method = method,
      t = one$t[range],
      observed = fmt(observed(result)[, 1]),
      upperbound = fmt(upperbound(result)[, 1]),
      alarm = ifelse(is.na(result@alarm[, 1]), "NA", as.integer(result@alarm[, 1])),
      stringsAsFactors = FALSE
    )
  }
}
out <- if (length(rows)) do.call(rbind, rows) else
  data.frame(series = character(), method = character(), t = integer(), observed = character(),
             upperbound = character(), alarm = character())
write.csv(out, positional[2], row.names = FALSE, quote = FALSE)
