# frozen_string_literal: true

module Pushgate
  # Runs a block when the surrounding ActiveRecord transaction commits, and
  # never if it rolls back; at once when there is no transaction (or no
  # ActiveRecord). Rails 7.2+ has this built in; before that the block rides
  # on the transaction as a record, the way ActiveRecord runs after_commit.
  module AfterCommit
    module_function

    def run(&block)
      connection = current_connection
      return block.call unless connection&.transaction_open?

      if ActiveRecord.respond_to?(:after_all_transactions_commit)
        ActiveRecord.after_all_transactions_commit(&block)
      else
        connection.add_transaction_record(Callback.new(block))
      end
      nil
    end

    def current_connection
      return nil unless defined?(ActiveRecord::Base) && ActiveRecord::Base.connected?

      ActiveRecord::Base.connection
    end

    # The interface ActiveRecord 6.1-7.1 calls on the records of a transaction.
    # In a nested (savepoint) transaction ActiveRecord hands it to the parent,
    # so it runs when the outermost transaction commits.
    class Callback
      def initialize(block)
        @block = block
      end

      def has_transactional_callbacks? # rubocop:disable Naming/PredicateName
        true
      end

      def trigger_transactional_callbacks?
        true
      end

      def before_committed!(*); end

      def committed!(should_run_callbacks: true, **)
        @block.call if should_run_callbacks
      end

      def rolledback!(*, **); end

      def add_to_transaction(*); end
    end
  end
end
