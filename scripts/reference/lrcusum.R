#!/usr/bin/env Rscript
# Reference values for yujing's count CUSUM (src/pipeline/detect/cusum.rs) and seasonal
# in-control mean (glm.rs), computed by R's surveillance::algo.glrnb with a known shift
# (theta = kappa), which runs the package's C routines lr_cusum (alpha = 0) / lr_cusum_nb,
# restarting after each alarm. Install R with scripts/lib/r.sh.
#
# Usage:
#   Rscript scripts/reference/lrcusum.R IN.csv OUT.csv [--c-arl=5] [--theta=0.693...]
#           [--alpha=0 | --alpha=estimate] [--train=0] [--harmonics=1] [--trend=false]
#           [--period=365]
#
# IN.csv   columns series,t,y[,mu0] (header; one row per day, t consecutive within a series).
#   --train=0 (default): mu0 is taken from the mu0 column; every day is monitored.
#   --train=N > 0: the first N days of each series are the training period; mu0 for the rest
#     is fitted by the package's estimateGLRNbHook (log mu = b0 [+ b1 t] + harmonics, with
#     R's t = 1, 2, ... and period --period); --alpha=0 fits a Poisson glm, --alpha=estimate
#     a glm.nb (alpha = 1/theta), any other value a negative binomial with that alpha.
# OUT.csv  columns series,t,mu0,upperbound,alarm,alpha for every monitored day: the in-control
#   mean used, the package's "cases" bound (clamped at 0, as algo.glrnb does), 0/1 alarms and
#   the dispersion used. Numbers with 17 significant digits.

suppressPackageStartupMessages(library(surveillance))

args <- commandArgs(trailingOnly = TRUE)
positional <- args[!grepl("^--", args)]
options <- args[grepl("^--", args)]
if (length(positional) != 2) {
  stop("usage: lrcusum.R IN.csv OUT.csv [--c-arl=5] [--theta=K] [--alpha=0|estimate|A] [--train=N] [--harmonics=1] [--trend=false] [--period=365]")
}
option <- function(name, default) {
  hit <- options[startsWith(options, paste0("--", name, "="))]
  if (length(hit) == 0) default else sub("^[^=]*=", "", hit[length(hit)])
}
c_arl <- as.numeric(option("c-arl", "5"))
theta <- as.numeric(option("theta", as.character(log(2))))
alpha_opt <- option("alpha", "0")
train <- as.integer(option("train", "0"))
harmonics <- as.integer(option("harmonics", "1"))
trend <- as.logical(option("trend", "false"))
period <- as.numeric(option("period", "365"))

input <- read.csv(positional[1])
stopifnot(all(c("series", "t", "y") %in% names(input)))
input$series <- as.character(input$series)

fmt <- function(x) ifelse(is.na(x), "NA", sprintf("%.17g", x))
rows <- list()
for (id in unique(input$series)) {
  one <- input[input$series == id, ]
  one <- one[order(one$t), ]
  stopifnot(all(diff(one$t) == 1))
  n <- nrow(one)
  # create.disProg is deprecated in favour of sts, but algo.glrnb still takes a disProg.
  disprog <- suppressWarnings(
    create.disProg(week = seq_len(n), observed = one$y, state = rep(0, n), freq = period)
  )
  control <- list(c.ARL = c_arl, theta = theta, ret = "cases", dir = "inc")
  if (train > 0) {
    control$range <- (train + 1):n
    control$mu0 <- list(S = harmonics, trend = trend, refit = FALSE)
    if (alpha_opt != "estimate") control$alpha <- as.numeric(alpha_opt)
  } else {
    control$range <- seq_len(n)
    control$mu0 <- one$mu0
    control$alpha <- as.numeric(alpha_opt)
  }
  result <- suppressMessages(algo.glrnb(disprog, control = control))
  rows[[length(rows) + 1]] <- data.frame(
    series = id,
    t = one$t[control$range],
    mu0 = fmt(result$control$mu0),
    upperbound = fmt(as.vector(result$upperbound)),
    alarm = as.integer(as.vector(result$alarm)),
    alpha = fmt(result$control$alpha),
    stringsAsFactors = FALSE
  )
}
write.csv(do.call(rbind, rows), positional[2], row.names = FALSE, quote = FALSE)
