"""Driver-side result sinks: a result split once into epoch metrics, facts and tables; Parquet rows; MLflow runs."""
