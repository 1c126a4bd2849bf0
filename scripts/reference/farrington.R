#!/usr/bin/env Rscript
# Reference values for yujing's Farrington Flexible (src/pipeline/detect/farrington.rs),
# computed by R's surveillance::farringtonFlexible (Debian r-cran-surveillance; install with
# scripts/lib/r.sh).
#
# Usage:
#   Rscript scripts/reference/farrington.R IN.csv OUT.csv [--preset=noufaily|original]
#                                          [--alpha=0.05] [--b=5] [--w=3]
#
# IN.csv   columns series,t,y (a header line; long format, one row per week; t is the 0-based
#          week index, consecutive within a series; any number of series). Weeks are numbered
#          by index (an sts without dates, freq 52), so reference weeks are t0 - 52 i.
# OUT.csv  columns series,t,observed,upperbound,expected,alarm,trend,phi,converged for every
#          week of the package's default range (from t = 52 b + w). Numbers with 17 significant
#          digits; NA written as NA; alarm as 0/1/NA. converged is 0 when glm warned that
#          an IRLS fit of that week (any of them: with or without trend, before or after the
#          re-weighting) did not converge, else 1.
#
# Presets follow vignette("monitoringCounts"): original = noPeriods 1, weightsThreshold 1,
# pastWeeksNotIncluded w, pThresholdTrend 0.05, delta with the 2/3 power; noufaily =
# noPeriods 10, weightsThreshold 2.58, pastWeeksNotIncluded 26, pThresholdTrend 1, nbPlugin.

suppressPackageStartupMessages(library(surveillance))

args <- commandArgs(trailingOnly = TRUE)
positional <- args[!grepl("^--", args)]
options <- args[grepl("^--", args)]
if (length(positional) != 2) {
  stop("usage: farrington.R IN.csv OUT.csv [--preset=noufaily|original] [--alpha=A] [--b=5] [--w=3]")
}
option <- function(name, default) {
  hit <- options[startsWith(options, paste0("--", name, "="))]
  if (length(hit) == 0) default else sub("^[^=]*=", "", hit[length(hit)])
}
preset <- option("preset", "noufaily")
alpha <- as.numeric(option("alpha", "0.05"))
b <- as.integer(option("b", "5"))
w <- as.integer(option("w", "3"))

control <- switch(preset,
  original = list(noPeriods = 1, weightsThreshold = 1, pastWeeksNotIncluded = w,
                  pThresholdTrend = 0.05, thresholdMethod = "delta", powertrans = "2/3"),
  noufaily = list(noPeriods = 10, weightsThreshold = 2.58, pastWeeksNotIncluded = 26,
                  pThresholdTrend = 1, thresholdMethod = "nbPlugin"),
  stop("unknown preset ", preset))
control <- c(control, list(b = b, w = w, alpha = alpha, reweight = TRUE, trend = TRUE,
                           limit54 = c(5, 4)))

input <- read.csv(positional[1], colClasses = c("character", "integer", "numeric"))
stopifnot(identical(names(input), c("series", "t", "y")))

fmt <- function(x) ifelse(is.na(x), "NA", sprintf("%.17g", x))

# The week index k of the farringtonFlexible frame a warning was raised under.
current_k <- function() {
  for (i in rev(seq_len(sys.nframe()))) {
    if (identical(sys.function(i), surveillance::farringtonFlexible)) {
      return(get("k", envir = sys.frame(i)))
    }
  }
  NA_integer_
}

rows <- list()
for (id in unique(input$series)) {
  one <- input[input$series == id, ]
  one <- one[order(one$t), ]
  stopifnot(all(diff(one$t) == 1))
  if (nrow(one) <= 52 * b + w) next
  unconverged <- integer()
  result <- withCallingHandlers(
    farringtonFlexible(sts(observed = matrix(one$y, ncol = 1), freq = 52), control = control),
    warning = function(wrn) {
      if (grepl("converge", conditionMessage(wrn))) unconverged <<- c(unconverged, current_k())
      invokeRestart("muffleWarning")
    })
  range <- (52 * b + w + 1):nrow(one)
  rows[[length(rows) + 1]] <- data.frame(
    series = id,
    t = one$t[range],
    observed = fmt(observed(result)[, 1]),
    upperbound = fmt(upperbound(result)[, 1]),
    expected = fmt(result@control$expected[, 1]),
    alarm = ifelse(is.na(result@alarm[, 1]), "NA", as.integer(result@alarm[, 1])),
    trend = ifelse(is.na(result@control$trend[, 1]), "NA", result@control$trend[, 1]),
    phi = fmt(result@control$phiVector[, 1]),
    converged = ifelse(range %in% unconverged, 0L, 1L),
    stringsAsFactors = FALSE
  )
}
out <- if (length(rows)) do.call(rbind, rows) else
  data.frame(series = character(), t = integer(), observed = character(),
             upperbound = character(), expected = character(), alarm = character(),
             trend = character(), phi = character(), converged = integer())
write.csv(out, positional[2], row.names = FALSE, quote = FALSE)
